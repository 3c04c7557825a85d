//! The server's side of a worker process: start it, send it requests, route
//! its answers to the requests waiting for them, and notice when it dies.
//!
//! Owns: the child process, its pipes, the table of requests in flight.
//! When the child dies (a llama.cpp abort, the OOM killer, `kill -9`),
//! every request in flight fails with a 500 that says so, and the registry
//! sees [`WorkerProcess::is_alive`] turn false and loads the model again on next use.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};

use super::protocol::WorkerMetrics;
use super::protocol::{Embeddings, FromWorker, ReadyInfo, ToWorker, WireError, WorkerConfig};
use crate::engine::{ErrorKind, GenerateRequest, Prompt, Stats};
use crate::server::error::ApiError;

/// What a generation sends its handler, in order: accepted (or failed),
/// text, then done or failed.
#[derive(Debug)]
pub enum GenerationEvent {
    Accepted,
    Text(String),
    Done(Stats),
    Failed(ApiError),
}

/// A request waiting for the worker's answer.
enum Pending {
    Generate(mpsc::UnboundedSender<GenerationEvent>),
    Embed(oneshot::Sender<Result<Embeddings, ApiError>>),
    Metrics(oneshot::Sender<WorkerMetrics>),
}

type PendingTable = Arc<Mutex<HashMap<u64, Pending>>>;

/// A running worker process with one model loaded.
#[derive(Debug)]
pub struct WorkerProcess {
    pid: u32,
    ready: ReadyInfo,
    outgoing: mpsc::UnboundedSender<ToWorker>,
    pending: PendingTable,
    next_id: AtomicU64,
    alive: Arc<AtomicBool>,
    /// Asks the reader task to kill the child (shutdown after the grace period).
    kill: Mutex<Option<oneshot::Sender<()>>>,
    /// Resolves when the child has exited.
    exited: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Pending::Generate(_) => "Generate",
            Pending::Embed(_) => "Embed",
            Pending::Metrics(_) => "Metrics",
        })
    }
}

/// A generation in flight. Dropping it (the client left) cancels it in
/// the worker, which frees its sequence at the next decode step.
#[derive(Debug)]
pub struct Generation {
    replies: mpsc::UnboundedReceiver<GenerationEvent>,
    /// A reply that arrived before the worker's acceptance (a race the
    /// protocol allows), handed out first.
    early: Option<GenerationEvent>,
    _cancel: CancelOnDrop,
}

impl Generation {
    /// The next text, done or failure; `None` if the worker vanished
    /// without a word (it always fails requests before that).
    pub async fn next(&mut self) -> Option<GenerationEvent> {
        if let Some(reply) = self.early.take() {
            return Some(reply);
        }
        self.replies.recv().await
    }
}

#[derive(Debug)]
struct CancelOnDrop {
    id: u64,
    outgoing: mpsc::UnboundedSender<ToWorker>,
    pending: PendingTable,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if lock(&self.pending).remove(&self.id).is_some() {
            let _ = self.outgoing.send(ToWorker::Cancel { id: self.id });
        }
    }
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start a worker process: {0}")]
    Process(std::io::Error),
    /// The worker refused or failed to load the model (a file that is not a
    /// usable GGUF is [`ErrorKind::UnusableModel`]).
    #[error("{}", .0.message)]
    Load(WireError),
    #[error("the worker process {0} while loading the model")]
    Died(String),
}

impl WorkerProcess {
    /// Start `olm __worker`, hand it `config`, and wait until its model is loaded.
    pub async fn spawn(config: &WorkerConfig) -> Result<Self, SpawnError> {
        let mut command = crate::process::olm_command(crate::process::WORKER_COMMAND)
            .map_err(SpawnError::Process)?;
        command
            .args(config.verbose.then_some("--verbose"))
            .stderr(Stdio::inherit());
        for worker in &config.load.rpc {
            // The model process's sandbox lets it reach its RPC workers.
            command.arg("--rpc-port").arg(worker.port().to_string());
        }
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .map_err(SpawnError::Process)?;
        let pid = child.id().unwrap_or(0);
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(SpawnError::Process(std::io::Error::other(
                "the worker's pipes are missing",
            )));
        };
        let mut line = serde_json::to_string(config)
            .map_err(|error| SpawnError::Process(std::io::Error::other(error)))?;
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(SpawnError::Process)?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<FromWorker>(&line) {
                Ok(FromWorker::Ready(ready)) => ready,
                Ok(FromWorker::Fatal { error }) => {
                    let _ = child.wait().await;
                    return Err(SpawnError::Load(error));
                }
                _ => {
                    let _ = child.start_kill();
                    return Err(SpawnError::Load(WireError::new(
                        ErrorKind::Internal,
                        "the worker answered nonsense",
                    )));
                }
            },
            _ => return Err(SpawnError::Died(exit_description(&mut child).await)),
        };

        let (outgoing, requests) = mpsc::unbounded_channel();
        let pending: PendingTable = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (kill, killed) = oneshot::channel();
        let (exit_sender, exited) = tokio::sync::watch::channel(false);
        tokio::spawn(write_requests(stdin, requests));
        tokio::spawn(read_replies(
            child,
            lines,
            Arc::clone(&pending),
            Arc::clone(&alive),
            killed,
            exit_sender,
        ));
        Ok(Self {
            pid,
            ready,
            outgoing,
            pending,
            next_id: AtomicU64::new(1),
            alive,
            kill: Mutex::new(Some(kill)),
            exited,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn ready(&self) -> &ReadyInfo {
        &self.ready
    }

    /// Whether the process still runs (false after a crash).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Whether any generation or embedding is in flight.
    pub fn is_busy(&self) -> bool {
        lock(&self.pending)
            .values()
            .any(|pending| !matches!(pending, Pending::Metrics(_)))
    }

    /// Queue a generation and wait until the worker accepts it: a prompt
    /// that does not fit, a schema llama.cpp cannot convert or a full queue
    /// is an error here, before any response is sent.
    pub async fn generate(
        &self,
        prompt: Prompt,
        request: GenerateRequest,
        whole: bool,
        context_limit: Option<u32>,
    ) -> Result<Generation, ApiError> {
        let (sender, replies) = mpsc::unbounded_channel();
        let id = self.register(Pending::Generate(sender))?;
        let mut generation = Generation {
            replies,
            early: None,
            _cancel: CancelOnDrop {
                id,
                outgoing: self.outgoing.clone(),
                pending: Arc::clone(&self.pending),
            },
        };
        self.send(ToWorker::Generate {
            id,
            prompt,
            request,
            whole,
            context_limit,
        })?;
        match generation.replies.recv().await {
            Some(GenerationEvent::Accepted) => Ok(generation),
            Some(GenerationEvent::Failed(error)) => Err(error),
            Some(early) => {
                generation.early = Some(early);
                Ok(generation)
            }
            None => Err(died()),
        }
    }

    /// Embed `inputs`, one vector each.
    pub async fn embed(&self, inputs: Vec<String>, truncate: bool) -> Result<Embeddings, ApiError> {
        let (sender, answer) = oneshot::channel();
        let id = self.register(Pending::Embed(sender))?;
        // A client that leaves stops the work it asked for.
        let _cancel = CancelOnDrop {
            id,
            outgoing: self.outgoing.clone(),
            pending: Arc::clone(&self.pending),
        };
        self.send(ToWorker::Embed {
            id,
            inputs,
            truncate,
        })?;
        answer.await.unwrap_or_else(|_| Err(died()))
    }

    /// The scheduler's counters, or `None` when the worker does not answer.
    pub async fn metrics(&self) -> Option<WorkerMetrics> {
        let (sender, answer) = oneshot::channel();
        let id = self.register(Pending::Metrics(sender)).ok()?;
        self.send(ToWorker::Metrics { id }).ok()?;
        let metrics = tokio::time::timeout(Duration::from_secs(2), answer).await;
        lock(&self.pending).remove(&id);
        metrics.ok()?.ok()
    }

    /// Let the worker finish and exit (it stops when its stdin closes);
    /// kill it if it has not exited within `grace`.
    pub async fn shut_down(self, grace: Duration) {
        let Self {
            outgoing,
            kill,
            mut exited,
            ..
        } = self;
        drop(outgoing);
        let finished = tokio::time::timeout(grace, exited.wait_for(|exited| *exited))
            .await
            .is_ok();
        if !finished {
            if let Some(kill) = lock(&kill).take() {
                let _ = kill.send(());
            }
            let _ = exited.wait_for(|exited| *exited).await;
        }
    }

    /// End every generation and embedding in flight with `error`, and stop
    /// the generations in the worker.
    pub fn fail_in_flight(&self, error: &ApiError) {
        let in_flight: Vec<(u64, Pending)> = lock(&self.pending).drain().collect();
        for (id, pending) in in_flight {
            match pending {
                Pending::Generate(sender) => {
                    let _ = sender.send(GenerationEvent::Failed(error.clone()));
                    let _ = self.outgoing.send(ToWorker::Cancel { id });
                }
                Pending::Embed(sender) => {
                    let _ = sender.send(Err(error.clone()));
                }
                Pending::Metrics(_) => {}
            }
        }
    }

    fn register(&self, pending: Pending) -> Result<u64, ApiError> {
        if !self.is_alive() {
            return Err(died());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(id, pending);
        Ok(id)
    }

    fn send(&self, message: ToWorker) -> Result<(), ApiError> {
        self.outgoing.send(message).map_err(|_| died())
    }
}

fn api_error(error: WireError) -> ApiError {
    ApiError::from_engine(error.kind, error.message)
}

fn died() -> ApiError {
    ApiError::internal(
        "the model's worker process stopped unexpectedly; it will be loaded again on the next request",
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Write each request as one line to the worker's stdin. Ends (closing
/// stdin, which tells the worker to exit) when the [`WorkerProcess`] is dropped.
async fn write_requests(mut stdin: ChildStdin, mut requests: mpsc::UnboundedReceiver<ToWorker>) {
    let mut buffer = Vec::new();
    while let Some(request) = requests.recv().await {
        buffer.clear();
        if serde_json::to_writer(&mut buffer, &request).is_err() {
            continue;
        }
        buffer.push(b'\n');
        if stdin.write_all(&buffer).await.is_err() || stdin.flush().await.is_err() {
            break;
        }
    }
}

/// Route each answer to its request until the worker's stdout closes, then
/// fail whatever is still waiting and record how the worker ended.
async fn read_replies(
    mut child: Child,
    mut lines: Lines<BufReader<ChildStdout>>,
    pending: PendingTable,
    alive: Arc<AtomicBool>,
    mut kill: oneshot::Receiver<()>,
    exited: tokio::sync::watch::Sender<bool>,
) {
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if !dispatch(&line, &pending) {
                        // Which request it answered is unknown, and that
                        // request would wait for ever: the worker is
                        // stopped, and every request it held gets an error.
                        tracing::error!("a model worker sent a line that is not its protocol; stopping it");
                        let _ = child.start_kill();
                    }
                }
                _ => break,
            },
            Ok(()) = &mut kill => {
                let _ = child.start_kill();
            }
        }
    }
    alive.store(false, Ordering::Relaxed);
    let how = exit_description(&mut child).await;
    let orphans: Vec<Pending> = lock(&pending).drain().map(|(_, pending)| pending).collect();
    if !orphans.is_empty() {
        tracing::error!(
            "a model worker {how} with {} requests in flight",
            orphans.len()
        );
    }
    let error = ApiError::internal(format!(
        "the model's worker process {how}; the model will be loaded again on the next request"
    ));
    for orphan in orphans {
        match orphan {
            Pending::Generate(sender) => {
                let _ = sender.send(GenerationEvent::Failed(error.clone()));
            }
            Pending::Embed(sender) => {
                let _ = sender.send(Err(error.clone()));
            }
            Pending::Metrics(_) => {}
        }
    }
    let _ = exited.send(true);
}

/// Route one line from the worker; `false` when it is not a message of
/// the protocol.
fn dispatch(line: &str, pending: &PendingTable) -> bool {
    let Ok(message) = serde_json::from_str::<FromWorker>(line) else {
        return false;
    };
    let mut table = lock(pending);
    match message {
        FromWorker::Accepted { id } => {
            if let Some(Pending::Generate(sender)) = table.get(&id) {
                let _ = sender.send(GenerationEvent::Accepted);
            }
        }
        FromWorker::Text { id, text } => {
            if let Some(Pending::Generate(sender)) = table.get(&id) {
                let _ = sender.send(GenerationEvent::Text(text));
            }
        }
        FromWorker::Done { id, stats } => {
            if let Some(Pending::Generate(sender)) = table.remove(&id) {
                let _ = sender.send(GenerationEvent::Done(stats.into()));
            }
        }
        FromWorker::Failed { id, error } => match table.remove(&id) {
            Some(Pending::Generate(sender)) => {
                let _ = sender.send(GenerationEvent::Failed(api_error(error)));
            }
            Some(Pending::Embed(sender)) => {
                let _ = sender.send(Err(api_error(error)));
            }
            _ => {}
        },
        FromWorker::Embedded { id, embeddings } => {
            if let Some(Pending::Embed(sender)) = table.remove(&id) {
                let _ = sender.send(Ok(embeddings));
            }
        }
        FromWorker::Metrics { id, metrics } => {
            if let Some(Pending::Metrics(sender)) = table.remove(&id) {
                let _ = sender.send(metrics);
            }
        }
        FromWorker::Ready(_) | FromWorker::Fatal { .. } => {}
    }
    true
}

/// "was killed by signal 9 (SIGKILL)", "exited with status 1", ...
async fn exit_description(child: &mut Child) -> String {
    use std::os::unix::process::ExitStatusExt;
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => match (status.code(), status.signal()) {
            (_, Some(signal)) => format!("was killed by signal {signal}{}", signal_name(signal)),
            (Some(code), None) => format!("exited with status {code}"),
            (None, None) => "ended".into(),
        },
        _ => {
            let _ = child.start_kill();
            "stopped answering".into()
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGABRT => " (SIGABRT, an abort inside llama.cpp)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGTERM => " (SIGTERM)",
        _ => "",
    }
}
