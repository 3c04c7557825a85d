//! The safety net for what validation misses: llama.cpp stops the whole
//! process (`GGML_ASSERT`, an uncaught C++ exception) on some inputs. In a
//! command, that becomes one `error:` line naming the file being loaded and
//! an exit code (5 while loading: the file is not a usable model; 1 after),
//! never a core dump or a backtrace. In a server's worker process the line
//! goes to stderr and the process still aborts, so that the server reports
//! the crash for what it is.
//!
//! A failure of llama.cpp's RPC backend (a worker that ended, stopped
//! answering or sent garbage; ggml-rpc aborts on each) is told as such when
//! workers are attached: one line naming them, exit 4 (network), whether a
//! model was loading or generating.
//!
//! Owns: ggml's abort callback, the `SIGABRT` handler of commands, and the
//! notes of which file is loading now and which RPC workers are attached.
//! Everything a handler touches is prepared beforehand: it only writes bytes
//! and exits.

use std::ffi::CStr;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

/// What happens after llama.cpp asks to abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortPolicy {
    /// A command: print one `error:` line and exit (5 while loading, else 1).
    ExitWithError,
    /// A worker process: print the line, then abort as llama.cpp intended.
    ReportAndAbort,
}

const POLICY_UNSET: u8 = 0;
const POLICY_EXIT: u8 = 1;
const POLICY_ABORT: u8 = 2;

static POLICY: AtomicU8 = AtomicU8::new(POLICY_UNSET);

/// The file loading now (escaped for the terminal), for the line printed if
/// llama.cpp aborts meanwhile. A leaked `Box<Vec<u8>>`, swapped out (and
/// freed) by [`LoadingGuard`].
static LOADING: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());

/// The RPC workers attached to this process (`a:p, b:q`), for the line
/// printed when ggml-rpc aborts. Leaked on purpose: set once per attach,
/// read by a handler that may run at any time.
static RPC_WORKERS: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());

/// Exit code while a model loads: the file is not a usable model.
const EXIT_UNUSABLE_MODEL: i32 = 5;
/// Exit code for an abort at any other time.
const EXIT_FAILURE: i32 = 1;
/// Exit code when an attached RPC worker failed (design.md: network error).
const EXIT_NETWORK: i32 = 4;

/// Install the net for this process. Call once, early, before llama.cpp runs.
pub fn install_abort_handler(policy: AbortPolicy) {
    let value = match policy {
        AbortPolicy::ExitWithError => POLICY_EXIT,
        AbortPolicy::ReportAndAbort => POLICY_ABORT,
    };
    POLICY.store(value, Ordering::SeqCst);
    // SAFETY: the callback is a plain function that lives for the program.
    unsafe {
        llama_cpp_sys_2::ggml_set_abort_callback(Some(on_ggml_abort));
    }
    if policy == AbortPolicy::ExitWithError {
        install_sigabrt_handler();
    }
}

/// Marks the time a model file loads: an abort meanwhile names it.
#[must_use = "the note lasts as long as the guard"]
pub struct LoadingGuard(());

impl LoadingGuard {
    pub fn new(path: &Path) -> Self {
        let shown: String = path
            .display()
            .to_string()
            .chars()
            .flat_map(|c| -> Box<dyn Iterator<Item = char>> {
                if c.is_control() {
                    Box::new(c.escape_default())
                } else {
                    Box::new(std::iter::once(c))
                }
            })
            .collect();
        let previous = LOADING.swap(
            Box::into_raw(Box::new(shown.into_bytes())),
            Ordering::SeqCst,
        );
        free_line(previous);
        Self(())
    }
}

impl Drop for LoadingGuard {
    fn drop(&mut self) {
        free_line(LOADING.swap(std::ptr::null_mut(), Ordering::SeqCst));
    }
}

/// Note the RPC workers this process now uses (see [`RPC_WORKERS`]).
pub fn note_rpc_endpoints(workers: &str) {
    let shown: Vec<u8> = workers
        .bytes()
        .filter(|byte| !byte.is_ascii_control())
        .collect();
    // The previous note is leaked rather than freed: a handler in another
    // thread may be reading it.
    RPC_WORKERS.store(Box::into_raw(Box::new(shown)), Ordering::SeqCst);
}

fn free_line(line: *mut Vec<u8>) {
    if !line.is_null() {
        // SAFETY: every non-null pointer stored was made by Box::into_raw
        // and is freed once, by whoever swapped it out.
        drop(unsafe { Box::from_raw(line) });
    }
}

/// ggml's abort callback: runs in the thread that failed, before `abort()`.
extern "C" fn on_ggml_abort(message: *const std::os::raw::c_char) {
    let detail = if message.is_null() {
        &b"an internal check failed"[..]
    } else {
        // SAFETY: ggml passes a NUL-terminated buffer that outlives this call.
        unsafe { CStr::from_ptr(message) }.to_bytes()
    };
    let detail = &detail[..detail.len().min(512)];
    let workers = RPC_WORKERS.load(Ordering::SeqCst);
    if !workers.is_null() && contains(detail, b"ggml-rpc") {
        // SAFETY: notes are never freed (see note_rpc_endpoints).
        report_rpc(unsafe { &*workers }, detail);
        if POLICY.load(Ordering::SeqCst) == POLICY_EXIT {
            // SAFETY: _exit ends the process without running anything else.
            unsafe { libc::_exit(EXIT_NETWORK) }
        }
        return;
    }
    let loading = LOADING.load(Ordering::SeqCst);
    report(loading, Some(detail));
    if POLICY.load(Ordering::SeqCst) == POLICY_EXIT {
        exit_now(loading);
    }
}

/// The line for a failure inside ggml-rpc (its file name is in every
/// message it aborts with).
fn report_rpc(workers: &[u8], detail: &[u8]) {
    write_stderr(b"error: lost an RPC worker (");
    write_stderr(workers);
    write_stderr(
        b"): it ended, stopped answering (OLM_RPC_TIMEOUT) or the network failed (llama.cpp: ",
    );
    let message = detail
        .windows(2)
        .position(|pair| pair == b": ")
        .map_or(detail, |at| &detail[at + 2..]);
    write_stderr(message.strip_suffix(b"\n").unwrap_or(message));
    write_stderr(b")\n");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A `SIGABRT` that did not come through ggml (an uncaught C++ exception).
extern "C" fn on_sigabrt(_signal: libc::c_int) {
    let loading = LOADING.load(Ordering::SeqCst);
    report(loading, None);
    exit_now(loading);
}

/// The one `error:` line: which file was loading (if one was), and what
/// llama.cpp said (if it said anything).
fn report(loading: *mut Vec<u8>, detail: Option<&[u8]>) {
    if loading.is_null() {
        write_stderr(b"error: llama.cpp stopped on an internal check");
    } else {
        write_stderr(b"error: llama.cpp stopped while loading ");
        // SAFETY: the text stays alive while its guard (and so the load) lasts.
        write_stderr(unsafe { &*loading });
    }
    if let Some(detail) = detail {
        write_stderr(b" (");
        write_stderr(detail);
        write_stderr(b")");
    }
    if loading.is_null() {
        write_stderr(b"\n");
    } else {
        write_stderr(b": the file is not a usable model\n");
    }
}

fn exit_now(loading: *mut Vec<u8>) -> ! {
    let code = if loading.is_null() {
        EXIT_FAILURE
    } else {
        EXIT_UNUSABLE_MODEL
    };
    // SAFETY: _exit ends the process without running anything else.
    unsafe { libc::_exit(code) }
}

fn install_sigabrt_handler() {
    // SAFETY: the handler only calls write(2) and _exit(2), both
    // async-signal-safe, on data prepared before the signal.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigabrt as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut());
    }
}

/// Tests only (debug builds): the fault `OLM_TEST_FAULT` asks for, while a
/// model loads, through the same calls llama.cpp makes when it fails.
#[cfg(debug_assertions)]
pub(super) fn inject_test_fault() {
    match std::env::var(crate::env::OLM_TEST_FAULT).as_deref() {
        Ok("abort") => {
            let file = c"olm-test-fault";
            let message = c"GGML_ASSERT(%s) failed";
            let condition = c"test fault";
            // SAFETY: NUL-terminated strings and a format with one %s argument.
            unsafe {
                llama_cpp_sys_2::ggml_abort(file.as_ptr(), 1, message.as_ptr(), condition.as_ptr());
            }
        }
        Ok("signal") => {
            // SAFETY: raising a signal this process handles.
            unsafe {
                libc::raise(libc::SIGABRT);
            }
        }
        _ => {}
    }
}

fn write_stderr(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: writes from a valid buffer of the given length.
        let written = unsafe { libc::write(libc::STDERR_FILENO, rest.as_ptr().cast(), rest.len()) };
        if written <= 0 {
            return;
        }
        rest = &rest[written as usize..];
    }
}
