//! `olm chat`: glue between the command line and `chat` (the REPL).
//!
//! Resolves MODEL exactly as `olm run` does, turns the generation flags into
//! an engine request, installs the Ctrl-C flag and hands over. `olm run MODEL`
//! with no prompt on a terminal comes here too, through [`converse`].

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use super::resolve::{
    build_request, install_interrupt_flag, load_options, resolve_model_with_identity, Offer,
};
use crate::chat::{self, ChatSetup, ModelChoice};
use crate::cli::{ChatArgs, GenerationArgs};
use crate::engine;
use crate::ui::Printer;

pub fn run(args: ChatArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    crate::ui::init_tracing(args.generation.verbose);
    engine::configure_logging(args.generation.verbose);
    let cancel = install_interrupt_flag()?;
    converse(
        &args.model,
        &args.generation,
        args.hide_thinking,
        printer,
        &cancel,
    )
}

/// Chat with `model` until the user quits (exit 0).
pub(super) fn converse(
    model: &str,
    generation: &GenerationArgs,
    hide_thinking: bool,
    printer: &Printer,
    cancel: &AtomicBool,
) -> anyhow::Result<ExitCode> {
    let (checked, identity) = resolve_model_with_identity(model, Offer::Pull)?;
    // Off the network from here on (a pull the user agreed to is done).
    super::lock_down(generation.verbose, &generation.load, printer);
    let setup = ChatSetup {
        model: ModelChoice::new(model, checked, identity),
        load_options: load_options(&generation.load, generation.chat_template.as_deref())?,
        request: build_request(generation)?,
        system: generation.system.clone(),
        ctx_size: generation.ctx_size,
        threads: generation.threads.unwrap_or_else(engine::physical_cores),
        hide_thinking,
        resolve: &|name| resolve_model_with_identity(name, Offer::Nothing),
    };
    chat::run(setup, printer, cancel)?;
    Ok(ExitCode::SUCCESS)
}
