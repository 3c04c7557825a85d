//! Terminal output: stdout carries only data (the answer, JSON), stderr
//! carries status, warnings and errors.
//!
//! Owns: colour and TTY decisions (`NO_COLOR` is honoured; styling only on a
//! terminal), the `error:`/`hint:` format, the spinner, and the questions
//! asked on a terminal (the only user of dialoguer). Must not know
//! engine internals or decide exit codes.

mod progress;
mod spinner;

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};

pub use progress::PullProgress;
pub use spinner::Spinner;

/// Ask a yes/no question on the terminal; Enter takes `default`. `false`
/// when there is no answer (no terminal, Ctrl-C).
pub fn confirm(question: &str, default: bool) -> bool {
    dialoguer::Confirm::new()
        .with_prompt(question)
        .default(default)
        .interact()
        .unwrap_or(false)
}

/// Let the user pick one of `items` on the terminal (the first is
/// highlighted); `None` when they escape or there is no terminal.
pub fn choose(question: &str, items: &[String]) -> Option<usize> {
    dialoguer::Select::new()
        .with_prompt(question)
        .items(items)
        .default(0)
        .interact_opt()
        .ok()
        .flatten()
}

/// Where output goes and how it looks.
#[derive(Debug, Clone)]
pub struct Printer {
    stderr_is_terminal: bool,
    stdout_is_terminal: bool,
    color: bool,
}

const DIM: &str = "\x1b[2m";
const BOLD_RED: &str = "\x1b[1;31m";
const BOLD_YELLOW: &str = "\x1b[1;33m";
const RESET: &str = "\x1b[0m";

impl Printer {
    pub fn new() -> Self {
        let stderr_is_terminal = io::stderr().is_terminal();
        let no_color = std::env::var_os(crate::env::NO_COLOR).is_some_and(|v| !v.is_empty());
        Self {
            stderr_is_terminal,
            stdout_is_terminal: io::stdout().is_terminal(),
            color: stderr_is_terminal && !no_color,
        }
    }

    /// Whether stderr is a terminal (spinners and progress bars are shown only then).
    pub fn is_interactive(&self) -> bool {
        self.stderr_is_terminal
    }

    pub fn stdout_is_terminal(&self) -> bool {
        self.stdout_is_terminal
    }

    /// Text from a model or a model file, as it may go to stdout: exactly
    /// as it is into a pipe or file, made harmless on a terminal (see
    /// [`terminal_safe`]).
    pub fn stdout_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.stdout_is_terminal {
            terminal_safe(text)
        } else {
            Cow::Borrowed(text)
        }
    }

    /// A status line on stderr, dim on a colour terminal.
    pub fn status(&self, message: &str) {
        let message = escape_controls(message);
        let mut stderr = io::stderr().lock();
        // A failing stderr has nowhere left to report to.
        let _ = if self.color {
            writeln!(stderr, "{DIM}{message}{RESET}")
        } else {
            writeln!(stderr, "{message}")
        };
    }

    pub fn warn(&self, message: &str) {
        self.stderr_line(BOLD_YELLOW, "warning: ", message);
    }

    /// The one `error:` line, plus a `hint:` line when there is advice.
    pub fn error(&self, message: &str, hint: Option<&str>) {
        self.stderr_line(BOLD_RED, "error: ", message);
        if let Some(hint) = hint {
            self.stderr_line(DIM, "hint: ", hint);
        }
    }

    /// A piece of a model's reasoning on stderr, as it streams: dim on a
    /// colour terminal, with no line ending of its own.
    pub fn thinking(&self, text: &str) {
        let text = escape_controls(text);
        let mut stderr = io::stderr().lock();
        // A failing stderr has nowhere left to report to.
        let _ = if self.color {
            write!(stderr, "{DIM}{text}{RESET}")
        } else {
            write!(stderr, "{text}")
        };
        let _ = stderr.flush();
    }

    /// A spinner with `message` on a terminal; nothing otherwise.
    pub fn spinner(&self, message: &str) -> Spinner {
        Spinner::start(self.stderr_is_terminal, message)
    }

    fn stderr_line(&self, style: &str, label: &str, message: &str) {
        let message = escape_controls(message);
        let mut stderr = io::stderr().lock();
        // A failing stderr has nowhere left to report to.
        let _ = if self.color {
            writeln!(stderr, "{style}{label}{RESET}{message}")
        } else {
            writeln!(stderr, "{label}{message}")
        };
    }
}

impl Default for Printer {
    fn default() -> Self {
        Self::new()
    }
}

/// Make control characters visible so that text from files or the network
/// cannot move the cursor, change colours or forge extra lines.
pub fn escape_controls(text: &str) -> String {
    neutralize_controls(text, CarriageReturn::Show).into_owned()
}

/// Text a model wrote (or a model file carries) made safe to show on a
/// terminal. A document can make a model copy escape sequences into its
/// answer (prompt injection): set the window title, write the clipboard
/// (OSC 52), forge a hyperlink, or make the terminal type an answer back.
/// Control characters other than line feed and tab are made visible; a
/// carriage return is dropped (on a terminal it only moves the cursor back
/// to overwrite what was written, so dropping it hides nothing, and code
/// with CRLF line ends reads as it should).
/// Stateless per character, so a stream may be passed piece by piece.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    neutralize_controls(text, CarriageReturn::Drop)
}

#[derive(Clone, Copy, PartialEq)]
enum CarriageReturn {
    Show,
    Drop,
}

fn neutralize_controls(text: &str, carriage_return: CarriageReturn) -> Cow<'_, str> {
    let harmless = |c: char| c == '\n' || c == '\t';
    if !text.chars().any(|c| c.is_control() && !harmless(c)) {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            c if harmless(c) => safe.push(c),
            '\r' if carriage_return == CarriageReturn::Drop => {}
            c if c.is_control() => safe.extend(c.escape_default()),
            c => safe.push(c),
        }
    }
    Cow::Owned(safe)
}

/// Send tracing output (olm's, and llama.cpp's logs when the engine routes
/// them into tracing) to stderr when `verbose`.
pub fn init_tracing(verbose: bool) {
    if !verbose {
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env(crate::env::OLM_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(
            io::stderr().is_terminal()
                && std::env::var_os(crate::env::NO_COLOR).is_none_or(|v| v.is_empty()),
        )
        .with_target(false)
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_text_on_a_terminal_cannot_drive_it() {
        // OSC 52 (clipboard), CSI in its 8-bit form (U+009B), DEL.
        assert_eq!(
            terminal_safe("a\x1b]52;c;cm0gLXJm\x07b"),
            "a\\u{1b}]52;c;cm0gLXJm\\u{7}b"
        );
        assert_eq!(terminal_safe("x\u{9b}2Jy\u{7f}"), "x\\u{9b}2Jy\\u{7f}");
        // A carriage return cannot hide what was written before it.
        assert_eq!(terminal_safe("rm -rf /\rls"), "rm -rf /ls");
        assert_eq!(terminal_safe("line\r\n\tcode\n"), "line\n\tcode\n");
        assert!(matches!(terminal_safe("plain text\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn escape_sequences_are_made_visible() {
        assert_eq!(escape_controls("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape_controls("line\r\nnext"), "line\\r\nnext");
        assert_eq!(escape_controls("plain"), "plain");
    }
}
