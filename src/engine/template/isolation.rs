//! The template process: a chat template is code from a model file, which
//! anyone can write, so it is rendered in a child process (`olm __template`)
//! and never in a process that holds a model or serves other clients.
//!
//! Owns: both sides of that process. The child limits its own memory
//! (`RLIMIT_DATA`), so a template whose intermediate values grow without
//! end fails its allocation and ends only the child; the parent waits for
//! each answer no longer than [`RENDER_DEADLINE`] and stops waiting at once
//! when the caller's cancel flag is raised (Ctrl-C, a client that left),
//! killing the child in both cases. A child that answered stays for the next
//! rendering, so a chat or a server pays for the start only once.
//!
//! The wire: the first line the child reads is the template source; then
//! one [`RenderInput`] per line, each answered with one [`Answer`] line.

use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::jinja::{JinjaTemplate, RenderInput, MAX_RENDERED_BYTES};
use super::TemplateError;

/// Memory the template process may take (heap and anonymous mappings).
pub const TEMPLATE_MEMORY_LIMIT: u64 = 512 << 20;
/// How long one rendering may take (fuel stops a runaway loop sooner; this
/// bounds what fuel does not count, such as sorting a huge list).
pub const RENDER_DEADLINE: Duration = Duration::from_secs(5);
/// How often a wait looks at the cancel flag.
const POLL_SLICE: Duration = Duration::from_millis(50);
/// Longest answer line read back (JSON escapes can make text longer).
const MAX_ANSWER_BYTES: usize = 2 * MAX_RENDERED_BYTES + 4096;
/// Idle template processes kept for reuse.
const MAX_IDLE: usize = 4;

/// One rendering's outcome, as the child writes it.
#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Rendered(String),
    Failed(String),
    TooLarge { limit: usize },
}

/// Renders one template's conversations in template processes.
pub struct IsolatedTemplate {
    source: String,
    idle: Mutex<Vec<TemplateProcess>>,
}

impl std::fmt::Debug for IsolatedTemplate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("IsolatedTemplate")
            .field("source_bytes", &self.source.len())
            .finish()
    }
}

/// A template process being started in the background.
type Starting = std::thread::JoinHandle<Result<TemplateProcess, TemplateError>>;

/// A template process started ahead of time by [`prestart`], and the
/// source it was started with.
static PRESTARTED: Mutex<Option<(String, Starting)>> = Mutex::new(None);

/// Start a template process for `source` in the background (a model load
/// takes longer than a process start): the first [`IsolatedTemplate`] with
/// that source takes it instead of starting one then.
pub fn prestart(source: &str) {
    if JinjaTemplate::parse(source).is_err() {
        return;
    }
    let owned = source.to_owned();
    let spawned = std::thread::Builder::new()
        .name("olm-template-start".into())
        .spawn(move || TemplateProcess::spawn(&owned));
    if let Ok(handle) = spawned {
        *PRESTARTED.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((source.to_owned(), handle));
    }
}

/// The prestarted process, if it was started for `source`.
fn take_prestarted(source: &str) -> Option<TemplateProcess> {
    let (started_for, handle) = PRESTARTED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()?;
    let process = handle.join().ok()?.ok()?;
    (started_for == source).then_some(process)
}

impl IsolatedTemplate {
    /// `source` must already parse (see [`JinjaTemplate::parse`]); its process
    /// is the one [`prestart`] started for it, or starts at the first rendering.
    pub fn new(source: String) -> Self {
        let idle = take_prestarted(&source).into_iter().collect();
        Self {
            source,
            idle: Mutex::new(idle),
        }
    }

    /// Render `input` in a template process within [`RENDER_DEADLINE`];
    /// [`TemplateError::Cancelled`] as soon as `cancel` is raised.
    pub fn render(
        &self,
        input: &RenderInput,
        cancel: &AtomicBool,
    ) -> Result<String, TemplateError> {
        let deadline = Instant::now() + RENDER_DEADLINE;
        let request =
            serde_json::to_vec(input).map_err(|error| TemplateError::Process(error.to_string()))?;
        let (mut process, reused) = match self.take_idle() {
            Some(process) => (process, true),
            None => (TemplateProcess::spawn(&self.source)?, false),
        };
        let mut outcome = process.render(&request, cancel, deadline);
        if reused && matches!(outcome, Err(Fault::Gone)) {
            // An idle process that died meanwhile (killed from outside): one fresh try.
            process = TemplateProcess::spawn(&self.source)?;
            outcome = process.render(&request, cancel, deadline);
        }
        match outcome {
            Ok(answer) => {
                self.put_idle(process);
                match answer {
                    Answer::Rendered(text) => Ok(text),
                    Answer::Failed(message) => Err(TemplateError::Render(message)),
                    Answer::TooLarge { limit } => Err(TemplateError::TooLarge { limit }),
                }
            }
            Err(fault) => Err(process.end(fault)),
        }
    }

    fn take_idle(&self) -> Option<TemplateProcess> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put_idle(&self, process: TemplateProcess) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(process);
        }
    }
}

/// Why a rendering got no answer.
#[derive(Debug)]
enum Fault {
    /// The child's pipes closed: it ended (a memory limit, a crash, a kill).
    Gone,
    TimedOut,
    Cancelled,
    AnswerTooLong,
    Io(std::io::Error),
}

/// One running `olm __template`.
struct TemplateProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Bytes read after the last complete answer line.
    pending: Vec<u8>,
}

impl TemplateProcess {
    fn spawn(source: &str) -> Result<Self, TemplateError> {
        let failed = |error: std::io::Error| {
            TemplateError::Process(format!("cannot start the template process: {error}"))
        };
        let mut child = crate::process::olm_command(crate::process::TEMPLATE_COMMAND)
            .map_err(failed)?
            // An allocation failure's message would be noise on the user's
            // terminal: the parent reports what happened.
            .stderr(Stdio::null())
            .spawn()
            .map_err(failed)?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TemplateError::Process(
                "the template process has no pipes".into(),
            ));
        };
        let mut setup = serde_json::to_vec(source)
            .map_err(|error| TemplateError::Process(error.to_string()))?;
        setup.push(b'\n');
        if let Err(error) = stdin.write_all(&setup).and_then(|()| stdin.flush()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(error));
        }
        Ok(Self {
            child,
            stdin,
            stdout,
            pending: Vec::new(),
        })
    }

    fn render(
        &mut self,
        request: &[u8],
        cancel: &AtomicBool,
        deadline: Instant,
    ) -> Result<Answer, Fault> {
        let sent = self
            .stdin
            .write_all(request)
            .and_then(|()| self.stdin.write_all(b"\n"))
            .and_then(|()| self.stdin.flush());
        if let Err(error) = sent {
            return Err(if error.kind() == std::io::ErrorKind::BrokenPipe {
                Fault::Gone
            } else {
                Fault::Io(error)
            });
        }
        let line = self.read_line(cancel, deadline)?;
        serde_json::from_slice(&line).map_err(|error| Fault::Io(std::io::Error::other(error)))
    }

    /// The next answer line, waiting at most until `deadline`.
    fn read_line(&mut self, cancel: &AtomicBool, deadline: Instant) -> Result<Vec<u8>, Fault> {
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            if let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(line);
            }
            if self.pending.len() > MAX_ANSWER_BYTES {
                return Err(Fault::AnswerTooLong);
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(Fault::Cancelled);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Fault::TimedOut);
            }
            if !wait_readable(&self.stdout, (deadline - now).min(POLL_SLICE)).map_err(Fault::Io)? {
                continue;
            }
            match self.stdout.read(&mut chunk) {
                Ok(0) => return Err(Fault::Gone),
                Ok(read) => self.pending.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(Fault::Io(error)),
            }
        }
    }

    /// Stop the child after a fault and say what happened.
    fn end(mut self, fault: Fault) -> TemplateError {
        let _ = self.child.kill();
        let status = self.child.wait();
        match fault {
            Fault::Cancelled => TemplateError::Cancelled,
            Fault::TimedOut => TemplateError::TimedOut {
                seconds: RENDER_DEADLINE.as_secs(),
            },
            Fault::AnswerTooLong => TemplateError::TooLarge {
                limit: MAX_RENDERED_BYTES,
            },
            Fault::Gone => TemplateError::Exhausted(describe_end(status.ok())),
            Fault::Io(error) => TemplateError::Process(error.to_string()),
        }
    }
}

impl Drop for TemplateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `stdout` has bytes (or its end) to read within `timeout`.
fn wait_readable(stdout: &ChildStdout, timeout: Duration) -> std::io::Result<bool> {
    let mut poll = libc::pollfd {
        fd: stdout.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, and its count.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    if ready < 0 {
        let error = std::io::Error::last_os_error();
        return if error.kind() == std::io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(error)
        };
    }
    Ok(ready > 0)
}

fn describe_end(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    let memory = format!("{} MiB", TEMPLATE_MEMORY_LIMIT >> 20);
    match status.and_then(|status| status.signal()) {
        Some(libc::SIGABRT) => {
            format!("it needed more than the template process's {memory} of memory")
        }
        Some(signal) => format!("the template process was stopped by signal {signal}"),
        None => "the template process ended without an answer".into(),
    }
}

/// The child's side: `olm __template`. Reads the template source, then
/// renders each request until stdin closes. Returns the exit status.
pub fn serve() -> i32 {
    limit_own_memory(TEMPLATE_MEMORY_LIMIT);
    // The parent decides when this process ends (Ctrl-C reaches it too).
    // SAFETY: setting a signal's disposition to ignore is always sound.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let Some(Ok(first)) = lines.next() else {
        return 1;
    };
    let Ok(source) = serde_json::from_str::<String>(&first) else {
        return 1;
    };
    let template = JinjaTemplate::parse(&source);
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for line in lines {
        let Ok(line) = line else { return 1 };
        let answer = match (&template, serde_json::from_str::<RenderInput>(&line)) {
            (Err(error), _) => Answer::Failed(error.to_string()),
            (_, Err(error)) => Answer::Failed(format!("bad request: {error}")),
            (Ok(template), Ok(input)) => match template.render(&input) {
                Ok(text) => Answer::Rendered(text),
                Err(TemplateError::TooLarge { limit }) => Answer::TooLarge { limit },
                Err(error) => Answer::Failed(error.to_string()),
            },
        };
        let written = serde_json::to_writer(&mut stdout, &answer)
            .map_err(std::io::Error::other)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        if written.is_err() {
            return 1;
        }
    }
    0
}

/// Cap this process's heap: an allocation past it fails (and aborts).
fn limit_own_memory(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit reads one valid rlimit value.
    unsafe {
        libc::setrlimit(libc::RLIMIT_DATA, &limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_one_line() {
        let line = serde_json::to_string(&Answer::Rendered("a\nb".into())).unwrap();
        assert!(!line.contains('\n'));
        let back: Answer = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, Answer::Rendered(text) if text == "a\nb"));
    }

    #[test]
    fn a_dead_process_is_described() {
        assert!(describe_end(None).contains("ended"));
    }
}
