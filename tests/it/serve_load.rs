//! `olm serve` under a burst (security-tests.md T-E4): with `--parallel 4`
//! and a queue of 16, 64 simultaneous streaming clients get exactly 20
//! accepted (4 running, 16 queued) and 44 immediate 503s with Retry-After;
//! every accepted stream finishes with text, and afterwards the server is
//! healthy and its memory is back near where it was.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::server::{http, Server, MODEL};

const CLIENTS: usize = 64;

/// Resident memory of the server and its worker processes, in KiB.
fn resident_kib(server: &Server) -> u64 {
    let mut pids = vec![server.child.id()];
    pids.extend(server.worker_pids());
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            let line = status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))?
                .to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn a_burst_of_64_streams_gets_20_accepted_and_44_immediate_503s() {
    let server = Server::start(&["--parallel", "4", "--max-queue", "16", "-c", "1024"]);
    // Load the model and settle its memory before the burst.
    for _ in 0..3 {
        let warm = server.post(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": "1, 2, 3,", "max_tokens": 8, "stream": true}),
        );
        assert_eq!(warm.status, 200, "{}", warm.body);
    }
    let before = resident_kib(&server);

    let port = server.port;
    let host = server.host();
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let host = host.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                // Long enough that no accepted request ends during the burst.
                let body =
                    json!({"model": MODEL, "prompt": format!("Count from {index}: {index},"),
                    "max_tokens": 48, "stream": true, "temperature": 0})
                    .to_string();
                barrier.wait();
                let started = Instant::now();
                let reply = http(port, "POST", "/v1/completions", &[("Host", &host)], &body);
                (reply, started.elapsed())
            })
        })
        .collect();
    let replies: Vec<_> = clients
        .into_iter()
        .map(|client| client.join().expect("client thread"))
        .collect();

    let accepted: Vec<_> = replies
        .iter()
        .filter(|(reply, _)| reply.status == 200)
        .collect();
    let refused: Vec<_> = replies
        .iter()
        .filter(|(reply, _)| reply.status == 503)
        .collect();
    assert_eq!(
        (accepted.len(), refused.len()),
        (20, 44),
        "statuses: {:?}",
        replies
            .iter()
            .map(|(reply, _)| reply.status)
            .collect::<Vec<_>>()
    );
    for (reply, took) in &refused {
        assert_eq!(reply.header("retry-after"), Some("1"), "{}", reply.body);
        assert!(
            *took < Duration::from_secs(2),
            "a 503 should be immediate, took {took:?}"
        );
    }
    for (reply, _) in &accepted {
        assert!(reply.body.contains("data: [DONE]"), "{}", reply.body);
        assert!(
            reply.body.contains("\"text\":\""),
            "no text: {}",
            reply.body
        );
    }

    assert_eq!(server.get("/health").status, 200);
    server.wait_for_metrics(&[
        &format!("olm_active_sequences{{model=\"{MODEL}\"}} 0"),
        &format!("olm_queue_depth{{model=\"{MODEL}\"}} 0"),
        &format!("olm_requests_rejected_total{{model=\"{MODEL}\"}} 44"),
    ]);
    let after = resident_kib(&server);
    assert!(
        after <= before + before / 10,
        "memory grew from {before} KiB to {after} KiB"
    );
}
