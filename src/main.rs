//! olm's entry point: parse, dispatch, map errors to one `error:` line and an
//! exit code. Nothing else lives here.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use olm::cli::Cli;
use olm::commands;
use olm::ui::Printer;

fn main() -> ExitCode {
    // Before any thread exists, and inherited by every child process.
    std::env::set_var(olm::env::GGML_NO_BACKTRACE, "1");
    olm::cli::complete_from_env();
    let mut command = Cli::command();
    // The long version asks llama.cpp for its devices (which starts GPU
    // backends): only `--version` pays for that, never a run's start.
    if std::env::args_os().skip(1).any(|arg| arg == "--version") {
        command = command.long_version(commands::long_version());
    }
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|error| error.exit());
    let printer = Printer::new();
    match commands::dispatch(cli, &printer) {
        Ok(code) => code,
        Err(error) if commands::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            let code = commands::exit_code(&error);
            if code != commands::exit::INTERRUPTED {
                printer.error(&format!("{error:#}"), commands::hint(&error).as_deref());
            }
            ExitCode::from(code)
        }
    }
}
