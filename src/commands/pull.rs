//! `olm pull`: register a local file, or download a model from a hub
//! (Hugging Face or ModelScope, `--source`) into the store. The download
//! itself is [`crate::hub::pull`], shared with `olm serve`'s `POST
//! /api/pull`; this file is the terminal side: arguments, progress bars,
//! the quant picker, `--dry-run`, messages and exit codes, and the offer to
//! pull a model `olm run`/`olm chat` asked for that is not in the store
//! ([`offer_pull`]).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use super::resolve::install_interrupt_flag;
use super::UsageError;
use crate::catalog::{Catalog, SourceSetting};
use crate::cli::{PullArgs, SourceArg};
use crate::gguf::{self, CheckedModel};
use crate::hub::pull::{
    connect, fetch_and_register, register_from_cache, FromCache, PullEvents, Target, TargetError,
};
use crate::hub::quant::QuantChoice;
use crate::hub::{self, HubError, PullReporter};
use crate::human;
use crate::store::{self, space, HubKind, Manifest, ModelRef, RepoId, Store, StoreError};
use crate::ui::{Printer, PullProgress};

/// A model name that is neither in the store nor in the catalog (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct NotFound {
    pub message: String,
    pub hint: Option<String>,
}

pub fn run(args: PullArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let store = Store::from_env();
    let reference = ModelRef::parse(&args.model)?;
    if let ModelRef::Path(path) = &reference {
        if args.source.is_some() {
            return Err(UsageError::new("--source is for hub models, not local files").into());
        }
        return import(&store, path, args.name.as_deref(), printer);
    }
    if args.name.is_some() {
        return Err(UsageError::new("--name is only for local .gguf files").into());
    }
    let quant_flag = args.quant.as_deref().map(normalize_quant).transpose()?;
    let catalog = Catalog::load(&store.config_path())?;
    let mut target = Target::new(&reference, quant_flag, &catalog).map_err(target_error)?;
    if let Some(source) = args.source {
        target = target
            .with_source(source_setting(source), &catalog)
            .map_err(target_error)?;
    }
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
                "registered {} from the {} cache (offline)",
                manifest.name,
                manifest.hub.title()
            ),
        };
        printer.status(&message);
        return Ok(ExitCode::SUCCESS);
    }
    pull_online(&store, &target, &args, printer)
}

fn source_setting(source: SourceArg) -> SourceSetting {
    match source {
        SourceArg::Hf => SourceSetting::Hub(HubKind::HuggingFace),
        SourceArg::Modelscope => SourceSetting::Hub(HubKind::ModelScope),
        SourceArg::Auto => SourceSetting::Auto,
    }
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

    fn notice(&self, message: &str) {
        self.printer.status(message);
    }

    fn connecting(&self, hub: HubKind, repo: &RepoId, endpoint: &str) {
        self.printer
            .status(&format!("resolving {repo} on {endpoint} ({})", hub.title()));
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
/// or a `--source` the reference contradicts is a usage error (exit 2), an
/// unknown name is not found (exit 3, with the closest names); the others
/// keep their own exit codes.
fn target_error(error: TargetError) -> anyhow::Error {
    match error {
        TargetError::NotAName | TargetError::PathNeedsName | TargetError::SourceConflict { .. } => {
            UsageError::new(error.to_string()).into()
        }
        TargetError::UnknownName { name, suggestions } => unknown_name(&name, &suggestions, false),
        TargetError::Catalog(error) => error.into(),
        TargetError::Hub(error) => error.into(),
    }
}

/// "model 'x' ..." (exit 3), with the catalog names closest to it.
fn unknown_name(name: &str, suggestions: &[String], in_store_too: bool) -> anyhow::Error {
    let message = if in_store_too {
        format!("model '{name}' is not in the store, and no catalog alias has that name")
    } else {
        format!("model '{name}' is not a catalog alias (nor one of Ollama's names for one)")
    };
    let hint = match suggestions {
        [] => "`olm list --available` lists the catalog; a repo is owner/repo[:QUANT] (or ms://owner/repo)".to_owned(),
        close => format!(
            "did you mean {}? `olm list --available` lists the catalog",
            close.join(", ")
        ),
    };
    NotFound {
        message,
        hint: Some(hint),
    }
    .into()
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
    target: &Target,
    args: &PullArgs,
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    let existing = if args.force {
        hub::Existing::Replace
    } else {
        hub::Existing::KeepIfVerified
    };
    let result = download(store, target, existing, args.dry_run, printer);
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
    result.map(|_| ExitCode::SUCCESS)
}

/// Connect (trying the other hub when one cannot be reached), then show
/// the quants (`dry_run`) or fetch, verify and register the model.
fn download(
    store: &Store,
    target: &Target,
    existing: hub::Existing,
    dry_run: bool,
    printer: &Printer,
) -> anyhow::Result<Option<Manifest>> {
    let cancel = install_interrupt_flag()?;
    let events = Terminal {
        printer,
        progress: PullProgress::new(printer),
    };
    let connection = connect(target, &cancel, &events)?;
    if dry_run {
        print_dry_run(
            store,
            connection.origin.hub,
            &connection.choices,
            target,
            printer,
        )?;
        return Ok(None);
    }
    let (choice, manifest) = fetch_and_register(store, &connection, target, existing, &events)?;
    printer.status(&format!(
        "pulled {} ({}, {}) from {}; run it with `olm run {} \"...\"`",
        manifest.name,
        choice.quant,
        human::size(manifest.size()),
        connection.origin.hub.title(),
        manifest.name
    ));
    Ok(Some(manifest))
}

/// `--dry-run`: every quant with its size and whether it fits (stdout).
fn print_dry_run(
    store: &Store,
    hub: HubKind,
    choices: &[QuantChoice],
    target: &Target,
    printer: &Printer,
) -> anyhow::Result<()> {
    let free = space::free_disk(store.cache_of(hub));
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

/// `reference` (a name or repo `olm run`/`olm chat` asked for) is not in
/// the store: on a terminal, ask once whether to pull it now (default yes)
/// and, after the pull, return the checked model. Without a terminal, or
/// when the answer is no, `None` (the caller reports "not in the store";
/// scripts never download unasked). A name the catalog does not know is an
/// error that suggests the closest names.
pub fn offer_pull(reference: &ModelRef, printer: &Printer) -> anyhow::Result<Option<CheckedModel>> {
    if let ModelRef::Path(_) = reference {
        return Ok(None);
    }
    let store = Store::from_env();
    let catalog = Catalog::load(&store.config_path())?;
    let target = match Target::new(reference, None, &catalog) {
        Ok(target) => target,
        Err(TargetError::UnknownName { name, suggestions }) => {
            return Err(unknown_name(&name, &suggestions, true))
        }
        Err(error) => return Err(target_error(error)),
    };
    let on_terminal = std::io::stdin().is_terminal() && printer.is_interactive();
    if !on_terminal
        || !crate::ui::confirm(
            &format!(
                "{} is not in the store; pull {} now?",
                reference,
                target.repo()
            ),
            true,
        )
    {
        return Ok(None);
    }
    let Some(manifest) = download(
        &store,
        &target,
        hub::Existing::KeepIfVerified,
        false,
        printer,
    )?
    else {
        return Ok(None);
    };
    let resolved = store.resolve(&ModelRef::parse_name(&manifest.name)?)?;
    let checked = gguf::check_model(&resolved.path).map_err(|source| StoreError::InvalidModel {
        path: resolved.path.clone(),
        source,
    })?;
    Ok(Some(checked))
}
