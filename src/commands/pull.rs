//! `olm pull`: register a local file, or download a model from the hub into
//! the store. The download itself is [`crate::hub::pull`], shared with
//! `olm serve`'s `POST /api/pull`; this file is the terminal side: arguments,
//! progress bars, the quant picker, `--dry-run`, messages and exit codes.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use super::resolve::install_interrupt_flag;
use super::UsageError;
use crate::catalog::Catalog;
use crate::cli::PullArgs;
use crate::hub::pull::{
    fetch_and_register, list_quants, register_from_cache, FromCache, PullEvents, Target,
    TargetError,
};
use crate::hub::quant::QuantChoice;
use crate::hub::{self, Hub, HubError, HubOptions, PullReporter};
use crate::human;
use crate::store::{self, space, Manifest, ModelRef, RepoId, Store, StoreError};
use crate::ui::{Printer, PullProgress};

pub fn run(args: PullArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let store = Store::from_env();
    let reference = ModelRef::parse(&args.model)?;
    if let ModelRef::Path(path) = &reference {
        return import(&store, path, args.name.as_deref(), printer);
    }
    if args.name.is_some() {
        return Err(UsageError::new("--name is only for local .gguf files").into());
    }
    let quant_flag = args.quant.as_deref().map(normalize_quant).transpose()?;
    let catalog = Catalog::load(&store.config_path())?;
    let target = Target::new(&reference, quant_flag, &catalog).map_err(target_error)?;
    let offline = args.offline || crate::env::flag(crate::env::HF_HUB_OFFLINE);
    if offline {
        if args.dry_run {
            return Err(UsageError::new("--dry-run needs the hub; drop --offline").into());
        }
        let message = match register_from_cache(&store, &target)? {
            FromCache::AlreadyStored(manifest) => {
                format!("{} is already in the store", manifest.name)
            }
            FromCache::Registered(manifest) => format!(
                "registered {} from the Hugging Face cache (offline)",
                manifest.name
            ),
        };
        printer.status(&message);
        return Ok(ExitCode::SUCCESS);
    }
    let hub = Hub::new(HubOptions::from_env(), install_interrupt_flag()?);
    let events = Terminal {
        printer,
        progress: PullProgress::new(printer),
    };
    let result = pull_online(&store, &hub, &target, &args, &events);
    if let Err(error) = &result {
        if error
            .downcast_ref::<HubError>()
            .is_some_and(|hub| matches!(hub, HubError::Interrupted))
        {
            printer.status(
                "interrupted: the partial download is kept; run the same command to resume",
            );
        }
    }
    result
}

/// `olm pull` on a terminal (or with stderr redirected).
struct Terminal<'a> {
    printer: &'a Printer,
    progress: PullProgress,
}

impl PullEvents for Terminal<'_> {
    fn reporter(&self) -> &dyn PullReporter {
        &self.progress
    }

    fn warn(&self, message: &str) {
        self.printer.warn(message);
    }

    fn replaced(&self, previous: &Manifest, freed: u64) {
        let old = previous
            .files
            .first()
            .map_or("", |file| &file.sha256[..file.sha256.len().min(12)]);
        let freeing = if freed > 0 {
            format!(", freeing {}", human::size(freed))
        } else {
            String::new()
        };
        self.printer.status(&format!(
            "{} changed on the hub (was sha256 {old}…); the new version replaces the stored one{freeing}",
            previous.name
        ));
    }

    fn pick(&self, repo: &RepoId, wanted: &str, choices: &[QuantChoice]) -> Option<usize> {
        if !self.printer.is_interactive() || !std::io::stdin().is_terminal() {
            return None;
        }
        let labels: Vec<String> = choices
            .iter()
            .map(|choice| {
                format!(
                    "{:<10} {:>9}  {}",
                    choice.quant,
                    human::size(choice.size),
                    choice.set_name
                )
            })
            .collect();
        crate::ui::choose(&format!("{repo} has no {wanted}; pick a quant"), &labels)
    }
}

/// Quants are case-insensitive; stored upper case.
fn normalize_quant(text: &str) -> Result<String, StoreError> {
    store::names::check_tag(text).map_err(|reason| StoreError::invalid(text, reason))?;
    Ok(text.to_ascii_uppercase())
}

/// A [`TargetError`] as `olm pull` reports it: a path where a name is needed
/// is a usage error (exit 2); the others keep their own exit codes.
fn target_error(error: TargetError) -> anyhow::Error {
    match error {
        TargetError::NotAName | TargetError::PathNeedsName => {
            UsageError::new(error.to_string()).into()
        }
        TargetError::Catalog(error) => error.into(),
        TargetError::Hub(error) => error.into(),
    }
}

/// `olm pull ./file.gguf --name NAME`: validate, copy into the store, register.
fn import(
    store: &Store,
    path: &Path,
    name: Option<&str>,
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    if !path
        .to_string_lossy()
        .to_ascii_lowercase()
        .ends_with(".gguf")
    {
        return Err(UsageError::new(format!("{} is not a .gguf file", store::names::escaped(&path.to_string_lossy())))
            .with_hint("olm pull takes a model name, owner/repo[:QUANT], or a path to a .gguf file with --name")
            .into());
    }
    let Some(name) = name else {
        return Err(UsageError::new("a local file needs a store name")
            .with_hint("add --name NAME, e.g. --name my-model")
            .into());
    };
    let name = ModelRef::parse_name(name)?;
    let manifest = store.import(path, &name)?;
    printer.status(&format!(
        "registered {} ({}, {})",
        manifest.name,
        manifest.quant.as_deref().unwrap_or("unknown quant"),
        human::size(manifest.size())
    ));
    Ok(ExitCode::SUCCESS)
}

fn pull_online(
    store: &Store,
    hub: &Hub,
    target: &Target,
    args: &PullArgs,
    events: &Terminal<'_>,
) -> anyhow::Result<ExitCode> {
    let printer = events.printer;
    printer.status(&format!(
        "resolving {} on {}",
        target.repo(),
        hub.endpoint()
    ));
    let (files, choices) = list_quants(hub, target, events.reporter())?;
    if args.dry_run {
        print_dry_run(store, &choices, target, printer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let existing = if args.force {
        hub::Existing::Replace
    } else {
        hub::Existing::KeepIfVerified
    };
    let (choice, manifest) =
        fetch_and_register(store, hub, target, &files, &choices, existing, events)?;
    printer.status(&format!(
        "pulled {} ({}, {}); run it with `olm run {} \"...\"`",
        manifest.name,
        choice.quant,
        human::size(manifest.size()),
        manifest.name
    ));
    Ok(ExitCode::SUCCESS)
}

/// `--dry-run`: every quant with its size and whether it fits (stdout).
fn print_dry_run(
    store: &Store,
    choices: &[QuantChoice],
    target: &Target,
    printer: &Printer,
) -> anyhow::Result<()> {
    use std::io::Write;
    let free = space::free_disk(store.hf_cache());
    let memory = space::available_memory();
    let default = target.wanted_quant();
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{:<10} {:>10} {:>6}  {:<20} FILE",
        "QUANT", "SIZE", "PARTS", "FITS"
    )?;
    for choice in choices {
        let fits = match (
            free.is_some_and(|free| choice.size > free),
            memory.is_some_and(|memory| choice.size > memory),
        ) {
            (true, _) => "no (disk)",
            (false, true) => "disk only (memory)",
            (false, false) => "yes",
        };
        let marker = if choice.quant.eq_ignore_ascii_case(&default) {
            " *"
        } else {
            ""
        };
        writeln!(
            stdout,
            "{:<10} {:>10} {:>6}  {:<20} {}{marker}",
            choice.quant,
            human::size(choice.size),
            choice.files.len(),
            fits,
            choice.set_name
        )?;
    }
    stdout.flush()?;
    printer.status(&format!(
        "free disk: {}, available memory: {}; * = the quant `olm pull` takes",
        free.map_or("unknown".into(), human::size),
        memory.map_or("unknown".into(), human::size)
    ));
    Ok(())
}
