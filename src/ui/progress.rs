//! Download progress for `olm pull`: an indicatif bar per file (bytes, rate,
//! ETA) on a terminal, plain periodic lines otherwise. Implements the hub's
//! [`PullReporter`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::Printer;
use crate::hub::PullReporter;
use crate::human;

/// Seconds between plain progress lines when stderr is not a terminal.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

/// Progress on stderr.
pub struct PullProgress {
    printer: Printer,
    state: Mutex<State>,
}

struct State {
    bar: Option<ProgressBar>,
    file: String,
    total: u64,
    done: u64,
    started: Instant,
    start_bytes: u64,
    last_line: Instant,
}

impl PullProgress {
    pub fn new(printer: &Printer) -> Self {
        let now = Instant::now();
        Self {
            printer: printer.clone(),
            state: Mutex::new(State {
                bar: None,
                file: String::new(),
                total: 0,
                done: 0,
                started: now,
                start_bytes: 0,
                last_line: now,
            }),
        }
    }

    fn with_state(&self, action: impl FnOnce(&mut State)) {
        if let Ok(mut state) = self.state.lock() {
            action(&mut state);
        }
    }
}

impl PullReporter for PullProgress {
    fn waiting_for_lock(&self, file: &str) {
        self.printer
            .status(&format!("waiting for another pull of {file} to finish"));
    }

    fn start_file(&self, file: &str, total: u64, already: u64) {
        let interactive = self.printer.is_interactive();
        self.with_state(|state| {
            let now = Instant::now();
            *state = State {
                bar: None,
                file: file.to_owned(),
                total,
                done: already,
                started: now,
                start_bytes: already,
                last_line: now,
            };
            if interactive {
                let bar = ProgressBar::new(total);
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(short_name(file));
                bar.set_position(already);
                state.bar = Some(bar);
            }
        });
        if !interactive {
            let resumed = if already > 0 {
                format!(", resuming at {}", human::size(already))
            } else {
                String::new()
            };
            self.printer
                .status(&format!("pulling {file} ({}{resumed})", human::size(total)));
        }
    }

    fn advance(&self, bytes: u64) {
        let mut line = None;
        self.with_state(|state| {
            state.done += bytes;
            if let Some(bar) = &state.bar {
                bar.inc(bytes);
            } else if state.last_line.elapsed() >= PLAIN_INTERVAL {
                state.last_line = Instant::now();
                line = Some(plain_line(state));
            }
        });
        if let Some(line) = line {
            self.printer.status(&line);
        }
    }

    fn retrying(&self, reason: &str, delay: Duration) {
        let message = format!("{reason}; retrying in {:.1} s", delay.as_secs_f64());
        self.with_state(|state| match &state.bar {
            Some(bar) => bar.println(format!("warning: {message}")),
            None => self.printer.warn(&message),
        });
    }

    fn verifying(&self, file: &str) {
        self.with_state(|state| {
            if let Some(bar) = &state.bar {
                bar.set_message(format!("{} (verifying sha256)", short_name(file)));
            }
        });
    }

    fn finish_file(&self, file: &str) {
        let mut summary = String::new();
        self.with_state(|state| {
            if let Some(bar) = state.bar.take() {
                bar.finish_and_clear();
            }
            let seconds = state.started.elapsed().as_secs_f64().max(0.001);
            let fetched = state.done.saturating_sub(state.start_bytes);
            summary = if fetched == 0 {
                format!("{file}: already complete and verified")
            } else {
                format!(
                    "{file}: {} in {seconds:.1} s ({}/s), sha256 verified",
                    human::size(fetched),
                    human::size((fetched as f64 / seconds) as u64)
                )
            };
        });
        self.printer.status(&summary);
    }
}

fn plain_line(state: &State) -> String {
    let seconds = state.started.elapsed().as_secs_f64().max(0.001);
    let rate = (state.done.saturating_sub(state.start_bytes)) as f64 / seconds;
    let percent = if state.total == 0 {
        100.0
    } else {
        state.done as f64 * 100.0 / state.total as f64
    };
    let eta = if rate > 0.0 {
        format!(
            ", ETA {:.0} s",
            (state.total.saturating_sub(state.done)) as f64 / rate
        )
    } else {
        String::new()
    };
    format!(
        "{}: {percent:.0}% ({} of {}, {}/s{eta})",
        state.file,
        human::size(state.done),
        human::size(state.total),
        human::size(rate as u64)
    )
}

fn short_name(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    if name.chars().count() > 40 {
        format!("{}…", name.chars().take(39).collect::<String>())
    } else {
        name.to_owned()
    }
}
