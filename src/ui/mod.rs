//! Terminal output: stdout carries only data (the answer, JSON), stderr
//! carries status, warnings and errors.
//!
//! Owns: colour and TTY decisions (`NO_COLOR` is honoured; styling only on a
//! terminal), the `error:`/`hint:` format, the spinner, and the questions
//! asked on a terminal (the only user of dialoguer). Must not know
//! engine internals or decide exit codes.

mod progress;
mod spinner;

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
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return text.to_owned();
    }
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
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
    fn escape_sequences_are_made_visible() {
        assert_eq!(escape_controls("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape_controls("line\r\nnext"), "line\\r\nnext");
        assert_eq!(escape_controls("plain"), "plain");
    }
}
