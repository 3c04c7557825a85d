//! `olm serve` against slow and stalled clients, and its shutdown
//! (security-tests.md T-E1, T-E2, T-E6): half-sent headers, a body sent a
//! byte a second, a streaming client that stops reading, a connection cap,
//! SIGTERM with streams running, and a second SIGINT during the drain.
//!
//! Every test starts the real binary on 127.0.0.1 with short timeouts
//! (hidden flags) and talks to it over real sockets.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::server::{chat_body, http, parse_reply, read_all, Reply, Server, MODEL};

/// A 408 whose message (in either API's shape) says the body did not
/// arrive, answered after the body timeout and not long after.
fn assert_timely_408(reply: &Reply, message: &Value, elapsed: Duration, timeout: Duration) {
    assert_eq!(reply.status, 408, "{}", reply.body);
    assert!(
        message
            .as_str()
            .is_some_and(|message| message.contains("did not arrive")),
        "{}",
        reply.body
    );
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(3),
        "408 after {elapsed:?}, timeout {timeout:?}"
    );
}

/// The head of a POST with a JSON body of `length` bytes (`Connection: close`).
fn request_head(port: u16, method: &str, path: &str, length: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// A raw completion that counts on, greedily, for all of `max_tokens`
/// (about 90 tokens a second on one thread).
fn counting_completion(max_tokens: u32) -> String {
    json!({
        "model": MODEL,
        "prompt": "1, 2, 3, 4, 5, 6,",
        "max_tokens": max_tokens,
        "stream": true,
        "temperature": 0,
    })
    .to_string()
}

/// Open file descriptors of process `pid`.
fn open_descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// The descriptor count once the last request's connection has closed on
/// the server's side too (it lags the client's by a moment).
fn settled_descriptors(pid: i32) -> usize {
    (0..6)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            open_descriptors(pid)
        })
        .min()
        .unwrap_or(0)
}

/// Processes whose parent is `pid` (olm serve's model workers).
fn children(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
                    let after = stat.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Whether `pid` still runs (a zombie nobody reaped has stopped running).
fn is_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Connections that sent half a request line and stalled, with when each was opened.
fn stalled_connections(port: u16, count: usize) -> Vec<(TcpStream, Instant)> {
    (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let opened = Instant::now();
            stream.write_all(b"GET /heal").expect("half a request line");
            stream.set_nonblocking(true).expect("nonblocking");
            (stream, opened)
        })
        .collect()
}

/// Poll stalled connections until the server has closed each one (or
/// `deadline` passes); returns how long each stayed open, `None` if still open.
fn wait_until_closed(
    connections: &mut [(TcpStream, Instant)],
    deadline: Instant,
) -> Vec<Option<Duration>> {
    let mut closed: Vec<Option<Duration>> = vec![None; connections.len()];
    let mut buffer = [0u8; 1024];
    while closed.iter().any(Option::is_none) && Instant::now() < deadline {
        for ((stream, opened), closed) in connections.iter_mut().zip(closed.iter_mut()) {
            if closed.is_some() {
                continue;
            }
            // Whatever the server sends before closing (a 408, say) is read and ignored.
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) => {
                        *closed = Some(opened.elapsed());
                        break;
                    }
                    Ok(_) => {}
                    Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        *closed = Some(opened.elapsed());
                        break;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    closed
}

/// T-E1: 200 connections that send half a request line and stall are all
/// closed after the header timeout, the server's descriptors return to
/// their baseline, and normal requests during the attack are answered at once.
#[test]
fn stalled_headers_are_closed_after_the_header_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(3000);
    const ATTACKERS: usize = 200;
    let server = Server::start(&["-c", "512", "--header-timeout-ms", "3000"]);
    server.warm_up();
    let baseline = settled_descriptors(server.pid());

    let mut attack = stalled_connections(server.port, ATTACKERS);
    let held = Instant::now() + Duration::from_secs(2);
    while open_descriptors(server.pid()) < baseline + ATTACKERS && Instant::now() < held {
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = open_descriptors(server.pid());
    assert!(
        during >= baseline + ATTACKERS,
        "the server should hold all {ATTACKERS} connections: {during} descriptors, baseline {baseline}"
    );

    let started = Instant::now();
    let health = server.get("/health");
    let health_time = started.elapsed();
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(
        health_time < Duration::from_secs(1),
        "/health took {health_time:?} during the attack"
    );
    let started = Instant::now();
    let reply = server.post(
        "/v1/chat/completions",
        &chat_body("Name a color.", 4, false),
    );
    let generation_time = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        !reply.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{}",
        reply.body
    );
    assert!(
        generation_time < Duration::from_secs(3),
        "a 4-token answer took {generation_time:?} during the attack"
    );
    // Both were served while every stalled connection was still open.
    assert!(
        open_descriptors(server.pid()) >= baseline + ATTACKERS,
        "the attack ended before the probes finished; lengthen the header timeout"
    );

    let last_opened = attack.last().expect("connections").1;
    let closed = wait_until_closed(&mut attack, last_opened + TIMEOUT + Duration::from_secs(3));
    let still_open = closed.iter().filter(|time| time.is_none()).count();
    assert_eq!(
        still_open, 0,
        "{still_open} stalled connections were still open 3 s after the header timeout"
    );
    let earliest = closed.iter().flatten().min().expect("closed connections");
    assert!(
        *earliest >= TIMEOUT - Duration::from_millis(50),
        "a stalled connection was closed after {earliest:?}, before the header timeout"
    );

    let settled = Instant::now() + Duration::from_secs(2);
    loop {
        let now = open_descriptors(server.pid());
        if now <= baseline + 2 {
            break;
        }
        assert!(
            Instant::now() < settled,
            "descriptors did not return to baseline: {now}, baseline {baseline}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.get("/health").status, 200);
}

/// T-E1: beyond --max-connections, connections wait to be accepted, so the
/// server's descriptors stay bounded; each still gets its header timeout.
#[test]
fn connections_beyond_the_cap_wait_their_turn() {
    const CAP: usize = 20;
    const ATTACKERS: usize = 60;
    const TIMEOUT: Duration = Duration::from_millis(1000);
    let server = Server::start(&[
        "-c",
        "512",
        "--max-connections",
        "20",
        "--header-timeout-ms",
        "1000",
    ]);
    let baseline = settled_descriptors(server.pid());
    let mut attack = stalled_connections(server.port, ATTACKERS);

    // Sample the descriptors while the server works through the backlog.
    let pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(open_descriptors(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let rounds = u32::try_from(ATTACKERS.div_ceil(CAP)).expect("small");
    let closed = wait_until_closed(
        &mut attack,
        Instant::now() + TIMEOUT * rounds + Duration::from_secs(4),
    );
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");

    assert!(
        closed.iter().all(Option::is_some),
        "{} connections never closed",
        closed.iter().filter(|time| time.is_none()).count()
    );
    assert!(
        peak <= baseline + CAP + 1,
        "{peak} descriptors open at the peak: more than baseline {baseline} + {CAP} connections"
    );
    assert!(
        peak >= baseline + CAP - 2,
        "the cap was never reached ({peak} descriptors, baseline {baseline})"
    );
    let latest = closed.iter().flatten().max().expect("closed");
    assert!(
        *latest >= TIMEOUT * (rounds - 1),
        "the last connection closed after {latest:?}: it should have waited for a slot"
    );
    assert_eq!(server.get("/health").status, 200);
}

/// T-E1: a body sent a byte a second gets 408 after the body timeout, in
/// each API's error shape.
#[test]
fn a_body_sent_a_byte_a_second_gets_408() {
    const TIMEOUT: Duration = Duration::from_millis(2000);
    let server = Server::start(&["-c", "512", "--body-timeout-ms", "2000"]);
    let port = server.port;
    let trickle = |path: &'static str| {
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("set timeout");
            let started = Instant::now();
            stream
                .write_all(request_head(port, "POST", path, 64).as_bytes())
                .expect("send head");
            let mut writer = stream.try_clone().expect("clone socket");
            let done = Arc::new(AtomicBool::new(false));
            let sending = {
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    for _ in 0..64 {
                        if done.load(Ordering::Relaxed) || writer.write_all(b" ").is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                })
            };
            let reply = parse_reply(&read_all(&mut stream));
            let elapsed = started.elapsed();
            done.store(true, Ordering::Relaxed);
            let _ = sending.join();
            (reply, elapsed)
        })
    };
    let openai = trickle("/v1/chat/completions");
    let ollama = trickle("/api/chat");

    let (reply, elapsed) = openai.join().expect("OpenAI client");
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "408", "{}", reply.body);
    assert_timely_408(&reply, &error["message"], elapsed, TIMEOUT);
    let (reply, elapsed) = ollama.join().expect("Ollama client");
    assert_timely_408(&reply, &reply.json()["error"], elapsed, TIMEOUT);
    assert_eq!(server.get("/health").status, 200);
}

/// T-E2: a streaming client that stops reading is cut off after the write
/// timeout, its sequence is cancelled, and the request queued behind it
/// (one sequence only) is served.
#[test]
fn a_client_that_stops_reading_loses_its_sequence() {
    let server = Server::start(&[
        "--parallel",
        "1",
        "-c",
        "2048",
        "--write-timeout-ms",
        "1000",
    ]);
    server.warm_up();

    // Small buffers on the client's side (and a small MSS, which keeps the
    // server's send buffer small too), so a stream fills them in a few
    // hundred tokens instead of megabytes on loopback.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.set_tcp_mss(536).expect("TCP_MAXSEG");
    socket.connect(&server.address().into()).expect("connect");
    let mut stalled = TcpStream::from(socket);
    let body = counting_completion(1500);
    stalled
        .write_all(request_head(server.port, "POST", "/v1/completions", body.len()).as_bytes())
        .expect("send head");
    stalled.write_all(body.as_bytes()).expect("send body");
    server.wait_for_metric("olm_active_sequences", 1, Duration::from_secs(10));

    // Queued behind the stalled stream: served once its sequence is freed.
    let port = server.port;
    let queued = std::thread::spawn(move || {
        let host = format!("127.0.0.1:{port}");
        http(
            port,
            "POST",
            "/v1/chat/completions",
            &[("Host", &host)],
            &chat_body("Name a color.", 4, false).to_string(),
        )
    });
    server.wait_for_metric("olm_requests_cancelled_total", 1, Duration::from_secs(120));
    let reply = queued.join().expect("queued client");
    assert_eq!(reply.status, 200, "{}", reply.body);
    server.wait_for_metric("olm_active_sequences", 0, Duration::from_secs(5));
    assert_eq!(server.metric("olm_requests_cancelled_total"), Some(1));

    // The server dropped the connection mid-stream: no `[DONE]`.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    let received = String::from_utf8_lossy(&read_all(&mut stalled)).into_owned();
    assert!(received.starts_with("HTTP/1.1 200"), "{received:.200}");
    assert!(
        !received.contains("[DONE]"),
        "the stream ended normally instead of being cut off"
    );
}

/// A streaming request whose first event has arrived; the rest is read on
/// a thread and returned when the server ends the stream.
fn started_stream(port: u16, path: &'static str, body: String) -> std::thread::JoinHandle<String> {
    let (started, start) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("set timeout");
        stream
            .write_all(request_head(port, "POST", path, body.len()).as_bytes())
            .expect("send head");
        stream.write_all(body.as_bytes()).expect("send body");
        let mut raw = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&raw).contains("data: ") {
            let read = stream.read(&mut buffer).expect("first event");
            assert!(read > 0, "closed before the first event");
            raw.extend_from_slice(&buffer[..read]);
        }
        let _ = started.send(());
        raw.extend(read_all(&mut stream));
        String::from_utf8_lossy(&raw).into_owned()
    });
    start
        .recv_timeout(Duration::from_secs(60))
        .expect("the stream started");
    reader
}

/// Whether a connection to `address` is refused within `within` (retrying
/// while the server has not yet seen the signal).
fn refused_within(address: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
            Err(error) if error.kind() == ErrorKind::ConnectionRefused => return true,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

/// T-E6: SIGTERM with three streams running: new connections are refused at
/// once, the streams run to their end, and the server exits 0.
#[test]
fn sigterm_refuses_new_connections_and_lets_streams_finish() {
    let mut server = Server::start(&[
        "--parallel",
        "4",
        "-c",
        "1024",
        "--shutdown-grace-ms",
        "60000",
    ]);
    server.warm_up();
    let streams: Vec<_> = (0..3)
        .map(|index| {
            let body = chat_body(
                &format!("Write a long story about the number {index}."),
                96,
                true,
            );
            started_stream(server.port, "/v1/chat/completions", body.to_string())
        })
        .collect();
    assert_eq!(server.metric("olm_active_sequences"), Some(3));

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    assert!(
        refused_within(server.address(), Duration::from_secs(1)),
        "a new connection was not refused within 1 s of SIGTERM"
    );
    for stream in streams {
        let received = stream.join().expect("stream reader");
        assert!(received.starts_with("HTTP/1.1 200"), "{received:.200}");
        assert!(
            received.contains("data: [DONE]"),
            "the stream did not finish: {received}"
        );
    }
    let status = server.wait_for_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "exit waited for the grace period instead of the streams"
    );
}

/// T-E6: a second SIGINT during the drain exits 130 at once, and takes the
/// model workers with it.
#[test]
fn a_second_sigint_during_the_drain_exits_130() {
    let mut server = Server::start(&[
        "--parallel",
        "1",
        "-c",
        "2048",
        "--shutdown-grace-ms",
        "60000",
    ]);
    server.warm_up();
    let stream = started_stream(server.port, "/v1/completions", counting_completion(1500));
    let workers = children(server.pid());

    server.signal(libc::SIGINT);
    assert!(
        refused_within(server.address(), Duration::from_secs(1)),
        "a new connection was not refused within 1 s of SIGINT"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.is_running(),
        "the server should drain the running stream"
    );

    let signalled = Instant::now();
    server.signal(libc::SIGINT);
    let status = server.wait_for_exit(Duration::from_secs(5));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?} after the second SIGINT"
    );
    let received = stream.join().expect("stream reader");
    assert!(
        !received.contains("[DONE]"),
        "the stream should have been cut off"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while workers.iter().any(|&worker| is_alive(worker)) {
        assert!(
            Instant::now() < deadline,
            "model workers {workers:?} outlived olm serve"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// T-E6: a stream still running when the grace period ends gets an error
/// event saying the server is shutting down (not a cut connection), and
/// the server exits 0.
#[test]
fn streams_past_the_grace_period_end_with_an_error_event() {
    let mut server = Server::start(&[
        "--parallel",
        "1",
        "-c",
        "2048",
        "--shutdown-grace-ms",
        "1000",
    ]);
    server.warm_up();
    let stream = started_stream(server.port, "/v1/completions", counting_completion(1500));
    server.signal(libc::SIGTERM);
    let status = server.wait_for_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{status:?}");
    let received = stream.join().expect("stream reader");
    assert!(received.starts_with("HTTP/1.1 200"), "{received:.200}");
    assert!(
        received.contains("the server is shutting down"),
        "no error event at the end of the stream: {}",
        &received[received.len().saturating_sub(400)..]
    );
    assert!(
        !received.contains("data: [DONE]"),
        "the stream was not cut short"
    );
}
