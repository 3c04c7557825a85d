//! `olm serve`'s pull process (`olm __pull`): the one part of a server that
//! keeps the network. The server starts it before it locks itself into the
//! offline sandbox (a sandbox cannot be lifted, and children inherit it), so
//! `POST /api/pull` still downloads while the server process itself can
//! connect nowhere.
//!
//! Protocol, JSON lines: the server writes `{"id": N, "model": NAME}` to
//! start a pull and `{"id": N, "cancel": true}` to stop it; the process
//! answers with the pull's NDJSON progress lines, each as `{"id": N, "line":
//! TEXT, "last": BOOL, "status": CODE}`, the last one `success` or the
//! error with its HTTP status. The process names are checked again here: a
//! server can ask it for nothing `POST /api/pull` could not.
//!
//! Owns: starting the process, the protocol, and the process's main loop.
//! Must not touch: what a pull does (`hub::pull`), how progress is reported
//! (`store_routes`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::error::ApiError;
use super::store_routes::{pull_and_report, pull_target, ApiEvents, Line};

/// How long the process lets running pulls stop after the server went away.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A request from the server.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cancel: bool,
}

/// One progress line of a pull, from the process.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    id: u64,
    line: String,
    last: bool,
    status: u16,
}

/// The running pull process, as the server sees it.
pub struct PullProcess {
    child: Mutex<Child>,
    requests: Mutex<ChildStdin>,
    /// Taken by the reader thread, started on the first pull (after the
    /// server's sandbox is in force, so the thread is inside it).
    answers: Mutex<Option<ChildStdout>>,
    reader: Once,
    pending: Arc<Pending>,
    next_id: AtomicU64,
}

/// Pulls waiting for lines, by id; `None` once the process is gone.
type Pending = Mutex<Option<HashMap<u64, UnboundedSender<Line>>>>;

static PROCESS: OnceLock<PullProcess> = OnceLock::new();

/// Start the pull process (before the server's sandbox); `/api/pull` uses it
/// from then on. `verbose` is passed on (its log lines go to the server's
/// stderr).
pub fn start(verbose: bool) -> std::io::Result<()> {
    let mut command = crate::process::olm_command(crate::process::PULL_COMMAND)?;
    if verbose {
        command.arg("--verbose");
    }
    let mut child = command.stderr(Stdio::inherit()).spawn()?;
    let (Some(requests), Some(answers)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(std::io::Error::other("the pull process has no pipes"));
    };
    let process = PullProcess {
        child: Mutex::new(child),
        requests: Mutex::new(requests),
        answers: Mutex::new(Some(answers)),
        reader: Once::new(),
        pending: Arc::new(Mutex::new(Some(HashMap::new()))),
        next_id: AtomicU64::new(1),
    };
    PROCESS
        .set(process)
        .map_err(|_| std::io::Error::other("the pull process is already running"))
}

/// The pull process, if the server started one.
pub fn get() -> Option<&'static PullProcess> {
    PROCESS.get()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One pull in the process; dropping it does not stop the pull, [`PullTicket::cancel`] does.
pub struct PullTicket {
    process: &'static PullProcess,
    id: u64,
}

impl PullTicket {
    /// Stop the pull (a client that went away); its lines are dropped.
    pub fn cancel(&self) {
        if let Some(pending) = lock(&self.process.pending).as_mut() {
            if pending.remove(&self.id).is_some() {
                let _ = self.process.send(&Request {
                    id: self.id,
                    model: None,
                    cancel: true,
                });
            }
        }
    }
}

impl PullProcess {
    /// Start pulling `name`; its lines arrive on the receiver, the last with `last`.
    pub fn pull(
        &'static self,
        name: &str,
    ) -> Result<(PullTicket, UnboundedReceiver<Line>), ApiError> {
        self.reader.call_once(|| self.start_reader());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, lines) = unbounded_channel();
        match lock(&self.pending).as_mut() {
            Some(pending) => pending.insert(id, sender),
            None => return Err(gone()),
        };
        let request = Request {
            id,
            model: Some(name.to_owned()),
            cancel: false,
        };
        if self.send(&request).is_err() {
            if let Some(pending) = lock(&self.pending).as_mut() {
                pending.remove(&id);
            }
            return Err(gone());
        }
        Ok((PullTicket { process: self, id }, lines))
    }

    fn send(&self, request: &Request) -> std::io::Result<()> {
        let mut line = serde_json::to_string(request).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut requests = lock(&self.requests);
        requests.write_all(line.as_bytes())?;
        requests.flush()
    }

    /// Pass each answer to its pull; when the process ends, every pull still
    /// waiting gets an error line.
    fn start_reader(&'static self) {
        let Some(answers) = lock(&self.answers).take() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("pull-process".into())
            .spawn(move || {
                for line in BufReader::new(answers).lines() {
                    let Ok(line) = line else { break };
                    let Ok(answer) = serde_json::from_str::<Answer>(&line) else {
                        continue;
                    };
                    self.deliver(answer);
                }
                self.ended();
            });
        if spawned.is_err() {
            self.ended();
        }
    }

    fn deliver(&self, answer: Answer) {
        let mut pending = lock(&self.pending);
        let Some(pending) = pending.as_mut() else {
            return;
        };
        let Some(sender) = pending.get(&answer.id) else {
            return;
        };
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let _ = sender.send(Line {
            text: format!("{}\n", answer.line),
            last: answer.last,
            status,
        });
        if answer.last {
            pending.remove(&answer.id);
        }
    }

    fn ended(&self) {
        let waiting = lock(&self.pending).take().unwrap_or_default();
        let error = gone();
        for sender in waiting.into_values() {
            let _ = sender.send(Line {
                text: format!("{}\n", json!({"error": error.message})),
                last: true,
                status: error.status,
            });
        }
        let _ = lock(&self.child).try_wait();
        tracing::warn!("the pull process ended; /api/pull is unavailable until olm serve restarts");
    }
}

fn gone() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server's pull process has stopped; restart olm serve to pull models",
    )
}

/// `olm __pull`: run pulls for the server until its requests end (then
/// stop the pulls still running; their partial downloads stay for a resume).
pub fn run() -> i32 {
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let running: Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>> = Arc::default();
    let mut threads = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let Ok(request) = serde_json::from_str::<Request>(&line) else {
            continue;
        };
        if request.cancel {
            if let Some(flag) = lock(&running).get(&request.id) {
                flag.store(true, Ordering::Relaxed);
            }
            continue;
        }
        let Some(model) = request.model else { continue };
        let cancel = Arc::new(AtomicBool::new(false));
        lock(&running).insert(request.id, Arc::clone(&cancel));
        let (out, running) = (Arc::clone(&out), Arc::clone(&running));
        let id = request.id;
        threads.push(std::thread::spawn(move || {
            pull_one(id, &model, cancel, &out);
            lock(&running).remove(&id);
        }));
        threads.retain(|thread| !thread.is_finished());
    }
    for flag in lock(&running).values() {
        flag.store(true, Ordering::Relaxed);
    }
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while threads.iter().any(|thread| !thread.is_finished()) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    0
}

/// One pull, its lines written to stdout as [`Answer`]s.
fn pull_one(id: u64, model: &str, cancel: Arc<AtomicBool>, out: &Mutex<std::io::Stdout>) {
    let (sender, mut lines) = unbounded_channel::<Line>();
    let events = ApiEvents::new(Some(sender));
    events.send(json!({"status": "pulling manifest"}), false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while let Some(line) = lines.blocking_recv() {
                let answer = Answer {
                    id,
                    line: line.text.trim_end().to_owned(),
                    last: line.last,
                    status: line.status.as_u16(),
                };
                let Ok(mut text) = serde_json::to_string(&answer) else {
                    continue;
                };
                text.push('\n');
                let mut out = lock(out);
                // A server that went away ends this process through stdin.
                let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                if line.last {
                    break;
                }
            }
        });
        let pulled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match pull_target(model) {
                Ok(target) => pull_and_report(model, &target, cancel, &events),
                Err(error) => events.send_error(&error),
            }));
        if pulled.is_err() {
            // The server waits for a last line; a panic must still send one.
            events.send_error(&ApiError::internal("the pull failed"));
        }
        drop(events);
    });
}
